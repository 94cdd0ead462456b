//! `--config FILE`: the command line's settings in a TOML file.
//!
//! Every key is a flag's long name (`max-connections = 500`; `_` works for `-`); a table
//! prefixes its keys (`[inbox] max-age = 3600` is `--inbox-max-age`). A repeatable flag takes
//! an array. What the file sets becomes the flag's default, so `SAMOTOP_*` variables and then
//! flags override it, each wholly (a flag given once replaces the file's whole list). Every
//! value is checked when the file is read, and an error names the file and line.
//!
//! `--check-config` prints the effective configuration as a file of the same shape, each
//! value with where it came from.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};

use crate::cli::Cli;

/// A config file larger than this is refused: it is not a config file.
const MAX_FILE: u64 = 1 << 20;

/// Flags that make no sense in a file, and the ones clap adds.
const NOT_IN_FILE: &[&str] = &["config", "check_config", "help", "version"];

/// The table of per-recipient routes (see [`routes`]).
const ROUTES: &str = "routes";

/// Parts of a flag's name that mark its value secret in `--check-config`.
const SECRET: &[&str] = &["token", "secret", "password"];

/// The command line (and the file it names) could not be read.
#[derive(Debug)]
pub enum Failure {
    /// clap's own error (also `--help` and `--version`); it prints and exits.
    Usage(clap::Error),
    /// The config file: cannot be read, or a setting in it is wrong.
    Config(String),
}

/// Where each setting came from, for `--check-config` and for errors about a setting.
pub struct Effective {
    command: Command,
    matches: ArgMatches,
    file: Option<PathBuf>,
    /// Arg id → the line of the file that set it.
    lines: HashMap<String, usize>,
}

/// A value the file sets: the arg's id, its line and its values as flag text.
struct Setting {
    id: String,
    line: usize,
    values: Vec<String>,
}

/// Parses the process's command line, with the config file it names (`--config` or
/// `SAMOTOP_CONFIG`).
pub fn parse() -> Result<(Cli, Effective), Failure> {
    parse_from(std::env::args_os(), std::env::var_os("SAMOTOP_CONFIG"))
}

/// [`parse`] over the given arguments (the first is the program name) and value of
/// `SAMOTOP_CONFIG`.
pub fn parse_from(
    args: impl IntoIterator<Item = OsString>,
    env_config: Option<OsString>,
) -> Result<(Cli, Effective), Failure> {
    let args: Vec<OsString> = args.into_iter().collect();
    let mut command = Cli::command();
    let file = config_path(&args).or_else(|| env_config.map(PathBuf::from));
    let mut lines = HashMap::new();
    if let Some(path) = &file {
        let text = read(path)?;
        for setting in settings(&command, path, &text)? {
            lines.insert(setting.id.clone(), setting.line);
            let values = setting.values;
            command = command.mut_arg(&setting.id, |arg| arg.default_values(values));
        }
    }
    let matches = command
        .try_get_matches_from_mut(&args)
        .map_err(Failure::Usage)?;
    let cli =
        Cli::from_arg_matches(&matches).map_err(|e| Failure::Usage(e.format(&mut command)))?;
    Ok((
        cli,
        Effective {
            command,
            matches,
            file,
            lines,
        },
    ))
}

/// `--config PATH` or `--config=PATH`, before any `--`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

fn read(path: &Path) -> Result<String, Failure> {
    let fail = |e: std::io::Error| Failure::Config(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(fail)?;
    let size = file.metadata().map_err(fail)?.len();
    if size > MAX_FILE {
        return Err(Failure::Config(format!(
            "{}: {size} bytes is too large for a config file (at most {MAX_FILE})",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(fail)?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::Config(format!("{}: not UTF-8 text", path.display())))
}

/// The file's settings, each checked against its flag.
fn settings(command: &Command, path: &Path, text: &str) -> Result<Vec<Setting>, Failure> {
    let at = |offset: usize| {
        let line = 1 + text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        format!("{}:{line}", path.display())
    };
    let table = DeTable::parse(text).map_err(|e| {
        let place = e
            .span()
            .map(|s| at(s.start))
            .unwrap_or_else(|| path.display().to_string());
        Failure::Config(format!("{place}: {}", e.message()))
    })?;
    let mut probe = Cli::command()
        .no_binary_name(true)
        .mut_args(|arg| arg.env(None::<&'static str>));
    let mut out = Vec::new();
    if let Some(setting) = routes(table.get_ref())
        .map_err(|(span, why)| Failure::Config(format!("{}: {why}", at(span))))?
    {
        let line = 1 + text.as_bytes()[..setting.line.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        out.push(Setting { line, ..setting });
    }
    walk(command, table.get_ref(), "", &mut |key, value, span| {
        let line = 1 + text.as_bytes()[..span.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        let fail = |why: String| Failure::Config(format!("{}: {why}", at(span)));
        let setting = setting(command, &mut probe, key, value).map_err(fail)?;
        out.push(Setting { line, ..setting });
        Ok(())
    })?;
    Ok(out)
}

/// Calls `each` with every leaf of the table, keys of nested tables joined with `-`.
fn walk<'a>(
    command: &Command,
    table: &'a DeTable<'a>,
    prefix: &str,
    each: &mut dyn FnMut(&str, &'a DeValue<'a>, usize) -> Result<(), Failure>,
) -> Result<(), Failure> {
    for (key, value) in table.iter() {
        let name = format!("{prefix}{}", key.get_ref().replace('_', "-"));
        if prefix.is_empty() && name == ROUTES {
            continue; // read by `routes`
        }
        match value.get_ref() {
            DeValue::Table(inner) if find(command, &name).is_none() => {
                walk(command, inner, &format!("{name}-"), each)?;
            }
            leaf => each(&name, leaf, key.span().start)?,
        }
    }
    Ok(())
}

/// The table of routes: `[routes]` with `"PATTERN" = "URI"` or `= ["URI", ...]`, in the
/// file's order (first match wins), as the `--route PATTERN=URI,...` values they stand for.
/// The setting's `line` holds the table's offset in the file until the caller counts lines.
/// An error carries the offset it is about.
fn routes(top: &DeTable<'_>) -> Result<Option<Setting>, (usize, String)> {
    let Some((key, value)) = top.get_key_value(ROUTES) else {
        return Ok(None);
    };
    let DeValue::Table(table) = value.get_ref() else {
        return Err((
            key.span().start,
            "`routes` is a table: [routes] \"PATTERN\" = \"URI\"".into(),
        ));
    };
    if let Some((key, _)) = top.get_key_value("route") {
        return Err((
            key.span().start,
            "give routes either as `route = [...]` or as a [routes] table, not both".into(),
        ));
    }
    let mut values = Vec::new();
    for (pattern, uris) in table.iter() {
        let span = pattern.span().start;
        let fail = |why: String| (span, format!("[routes] {:?}: {why}", pattern.get_ref()));
        let uris: Vec<String> = match uris.get_ref() {
            DeValue::String(uri) => vec![uri.to_string()],
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(uri) => Ok(uri.to_string()),
                    _ => Err(fail("each backend is a string URI".into())),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(fail("a URI or a list of URIs".into())),
        };
        if uris.is_empty() {
            return Err(fail("an empty list of backends".into()));
        }
        let rule = format!("{}={}", pattern.get_ref(), uris.join(","));
        let (parsed, list) = crate::trigger::split_route(&rule).map_err(fail)?;
        if parsed != pattern.get_ref().as_ref() || list.len() != uris.len() {
            return Err(fail(
                "a backend URI holds a `,` followed by another URI".into(),
            ));
        }
        samotop_delivery::Pattern::parse(parsed).map_err(|e| fail(e.to_string()))?;
        values.push(rule);
    }
    Ok(Some(Setting {
        id: "route".into(),
        line: key.span().start,
        values,
    }))
}

fn find<'c>(command: &'c Command, name: &str) -> Option<&'c clap::Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(name))
}

/// One key of the file as the values its flag would be given.
fn setting(
    command: &Command,
    probe: &mut Command,
    key: &str,
    value: &DeValue<'_>,
) -> Result<Setting, String> {
    let Some(arg) = find(command, key).filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
    else {
        return Err(match suggest(command, key) {
            Some(like) => format!("unknown setting `{key}` (did you mean `{like}`?)"),
            None => format!("unknown setting `{key}`"),
        });
    };
    let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    let many = matches!(arg.get_action(), ArgAction::Append);
    let values = match value {
        DeValue::Boolean(b) if flag => vec![b.to_string()],
        _ if flag => return Err(format!("`{key}` is true or false")),
        DeValue::Array(items) if many => items
            .iter()
            .map(|v| scalar(key, v.get_ref()))
            .collect::<Result<_, _>>()?,
        DeValue::Array(_) => return Err(format!("`{key}` takes one value, not a list")),
        other => vec![scalar(key, other)?],
    };
    let id = arg.get_id().to_string();
    check(probe, arg, &values).map_err(|e| format!("`{key}`: {e}"))?;
    Ok(Setting {
        id,
        line: 0,
        values,
    })
}

fn scalar(key: &str, value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches('+')
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            i64::from_str_radix(digits, i.radix())
                .map(|n| n.to_string())
                .map_err(|e| format!("`{key}`: {e}"))
        }
        DeValue::Float(f) => Ok(f.as_str().replace('_', "")),
        DeValue::Boolean(_) => Err(format!("`{key}` is not true or false")),
        DeValue::Datetime(_) => Err(format!("`{key}` is not a date")),
        DeValue::Array(_) => Err(format!("`{key}`: a list inside a list")),
        DeValue::Table(_) => Err(format!("`{key}` is not a table")),
    }
}

/// Runs the flag's own parser over each value, as the command line would: `probe` is the
/// whole command without environment variables, so only the value is judged (a flag that
/// needs another is no error here).
fn check(probe: &mut Command, arg: &clap::Arg, values: &[String]) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return Ok(()); // a TOML boolean already
    }
    for value in values {
        let flag = format!("--{long}={value}");
        match probe.try_get_matches_from_mut([flag.as_str()]) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::MissingRequiredArgument
                        | clap::error::ErrorKind::ArgumentConflict
                ) => {}
            Err(e) => return Err(clap_reason(&e)),
        }
    }
    Ok(())
}

/// The reason in a clap error, without its `error:` and usage lines.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "invalid value 'x' for '--flag <N>': why" → "invalid value 'x': why"
    match (first.find(" for '--"), first.rfind("': ")) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &first[..a], &first[b + 1..]),
        _ => first.to_string(),
    }
}

fn suggest(command: &Command, key: &str) -> Option<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_IN_FILE.contains(l) && !l.starts_with("check"))
        .map(|l| (distance(l, key), l))
        .filter(|(d, l)| *d <= 2.max(l.len() / 4))
        .min()
        .map(|(_, l)| l.to_string())
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

impl Effective {
    /// The effective configuration as a config file: every setting, with a comment saying
    /// where its value came from (flag, variable, file line or default); secrets masked.
    pub fn render(&self) -> String {
        let mut out = String::from("# samotop's effective configuration");
        if let Some(file) = &self.file {
            let _ = write!(out, " (config file {})", file.display());
        }
        out.push('\n');
        // In the order of --help (setting a default moves an arg to the end).
        let order = Cli::command();
        for arg in order.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(arg) = self.command.get_arguments().find(|a| a.get_id() == id) else {
                continue;
            };
            let Some(long) = arg.get_long().filter(|_| !NOT_IN_FILE.contains(&id)) else {
                continue;
            };
            let raw: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let origin = self.origin(arg);
            if raw.is_empty() && self.matches.value_source(id).is_none() {
                let _ = writeln!(out, "# {long} =  # not set");
                continue;
            }
            let secret = SECRET.iter().any(|s| long.contains(s));
            let value = if secret {
                quote("(secret)")
            } else if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
                raw.first().cloned().unwrap_or_else(|| "false".into())
            } else if matches!(arg.get_action(), ArgAction::Append) {
                let items: Vec<String> = raw.iter().map(|v| literal(v)).collect();
                format!("[{}]", items.join(", "))
            } else {
                raw.first().map(|v| literal(v)).unwrap_or_default()
            };
            let _ = writeln!(out, "{long} = {value}  # {origin}");
        }
        out
    }

    /// Where a setting's value came from.
    fn origin(&self, arg: &clap::Arg) -> String {
        let id = arg.get_id().as_str();
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".into(),
            Some(ValueSource::EnvVariable) => arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_else(|| "environment".into()),
            _ => match (&self.file, self.lines.get(id)) {
                (Some(file), Some(line)) => format!("{}:{line}", file.display()),
                _ => "default".into(),
            },
        }
    }

    /// `message`, with the file and line of each `--flag` it names that the file set.
    pub fn locate(&self, message: &str) -> String {
        let mut out = message.to_string();
        let Some(file) = &self.file else {
            return out;
        };
        let mut places = Vec::new();
        for arg in self.command.get_arguments() {
            let id = arg.get_id().as_str();
            let (Some(long), Some(line)) = (arg.get_long(), self.lines.get(id)) else {
                continue;
            };
            let named = message.match_indices(&format!("--{long}")).any(|(at, m)| {
                let next = message[at + m.len()..].chars().next();
                !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-')
            });
            let from_file = !matches!(
                self.matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if named && from_file {
                places.push(format!("`{long}` at {}:{line}", file.display()));
            }
        }
        if !places.is_empty() {
            let _ = write!(out, " ({})", places.join(", "));
        }
        out
    }
}

/// A value as TOML: integers and decimal numbers bare, the rest a string.
fn literal(value: &str) -> String {
    let number = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().filter(|&b| b == b'.').count() <= 1
        && !value.starts_with('.')
        && !value.ends_with('.')
        && !(value.len() > 1 && value.starts_with('0') && !value.starts_with("0."));
    if number {
        value.to_string()
    } else {
        quote(value)
    }
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("a temp file");
        f.write_all(text.as_bytes()).expect("written");
        f
    }

    fn run(args: &[&str], text: &str) -> Result<(Cli, Effective), String> {
        let f = file(text);
        let mut argv: Vec<OsString> = vec!["samotop".into(), "--config".into()];
        argv.push(f.path().into());
        argv.extend(args.iter().map(OsString::from));
        parse_from(argv, None).map_err(|e| match e {
            Failure::Usage(e) => e.to_string(),
            Failure::Config(e) => e,
        })
    }

    #[test]
    fn the_file_sets_what_flags_do() {
        let (cli, _) = run(
            &[],
            "max-connections = 12\n\
             max_recipients = 7\n\
             smtp = [\"127.0.0.1:2526\", \"unix:/tmp/s.sock\"]\n\
             require-tls = true\n\
             tls-self-signed = true\n\
             command-timeout = 1.5\n\
             [inbox]\n\
             max-age = 0x10\n",
        )
        .expect("parsed");
        assert_eq!(cli.max_connections, 12);
        assert_eq!(cli.max_recipients, 7);
        assert_eq!(cli.smtp.len(), 2);
        assert!(cli.require_tls);
        assert_eq!(cli.command_timeout, 1.5);
        assert_eq!(cli.inbox_max_age, 16);
    }

    #[test]
    fn flags_override_the_file_wholly() {
        let (cli, effective) = run(
            &["--max-connections", "3", "--smtp", "127.0.0.1:9"],
            "max-connections = 12\nsmtp = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nmax-errors = 4\n",
        )
        .expect("parsed");
        assert_eq!(cli.max_connections, 3);
        assert_eq!(cli.smtp.len(), 1);
        assert_eq!(cli.max_errors, 4);
        let text = effective.render();
        assert!(text.contains("max-connections = 3  # flag"), "{text}");
        assert!(text.contains("max-errors = 4  # "), "{text}");
        assert!(text.contains(":3\n"), "{text}");
        assert!(text.contains("max-recipients = 100  # default"), "{text}");
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "spf = \"tag\"\n\nmax-conections = 5\n",
                ":3: unknown setting `max-conections` (did you mean `max-connections`?)",
            ),
            (
                "max-connections = \"many\"\n",
                ":1: `max-connections`: invalid value 'many': invalid digit",
            ),
            (
                "\n\nrequire-tls = \"yes\"\n",
                ":3: `require-tls` is true or false",
            ),
            (
                "name = [\"mx1.example\", \"mx2.example\"]\n",
                ":1: `name` takes one value, not a list",
            ),
            (
                "deliver = \"nowhere\"\n",
                ":1: `deliver`: invalid value 'nowhere'",
            ),
            ("a = \n", ":1: "),
            ("config = \"x.toml\"\n", ":1: unknown setting `config`"),
            (
                "[tls]\ncert = 5\nnope = 1\n",
                ":3: unknown setting `tls-nope`",
            ),
            ("when = 1979-05-27\n", ":1: unknown setting `when`"),
            (
                "max-errors = 1979-05-27\n",
                ":1: `max-errors` is not a date",
            ),
        ];
        for (text, want) in cases {
            let Err(e) = run(&[], text) else {
                panic!("{text:?} was accepted");
            };
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_missing_or_huge_file_is_an_error() {
        let argv = ["samotop", "--config=/nonexistent/samotop.toml"].map(OsString::from);
        assert!(
            matches!(parse_from(argv, None), Err(Failure::Config(e)) if e.contains("/nonexistent/samotop.toml"))
        );
        let huge = file(&"# padding\n".repeat(200_000));
        let argv = vec!["samotop".into(), "--config".into(), huge.path().into()];
        assert!(
            matches!(parse_from(argv, None), Err(Failure::Config(e)) if e.contains("too large"))
        );
    }

    #[test]
    fn the_effective_configuration_reads_back_the_same() {
        let (_, first) = run(
            &["--http-token", "s3cret", "--accept-domain", "a.example,b.example"],
            "name = \"mx.example\"\nmap = ['^(.*)@old\\.example$=$1@new.example']\nbanner-delay = 0.25\n",
        )
        .expect("parsed");
        let text = first.render();
        assert!(!text.contains("s3cret"), "{text}");
        let without_secret: String = text
            .lines()
            .filter(|l| !l.starts_with("http-token"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (_, second) = run(&[], &without_secret).expect("the rendering parses");
        let again: Vec<String> = second
            .render()
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("http-token") && !l.starts_with("# http-token"))
            .map(|l| l.split("  # ").next().unwrap_or("").to_string())
            .collect();
        let before: Vec<String> = text
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("http-token") && !l.starts_with("# http-token"))
            .map(|l| l.split("  # ").next().unwrap_or("").to_string())
            .collect();
        assert_eq!(before, again);
    }

    #[test]
    fn errors_about_a_flag_point_into_the_file() {
        let (_, effective) = run(&[], "\nmaildir-layout = \"per-recipient\"\n").expect("parsed");
        let message = effective.locate("--maildir-layout per-recipient needs --accept-domain");
        assert!(message.contains(" (`maildir-layout` at "), "{message}");
        assert!(message.ends_with(":2)"), "{message}");
    }

    #[test]
    fn a_routes_table_is_route_flags_in_order() {
        let (cli, effective) = run(
            &[],
            "deliver = \"maildir:/var/mail\"\n\
             [routes]\n\
             \"alerts+*@example.org\" = \"https://hooks.example/in?a=1\"\n\
             \"re:^ops-.*@example\\\\.org$\" = [\"exec:/bin/true\", \"maildir:/var/ops\"]\n\
             \"*@example.net\" = \"null\"\n",
        )
        .expect("parsed");
        assert_eq!(
            cli.trigger.route,
            [
                "alerts+*@example.org=https://hooks.example/in?a=1",
                "re:^ops-.*@example\\.org$=exec:/bin/true,maildir:/var/ops",
                "*@example.net=null",
            ]
        );
        let text = effective.render();
        assert!(text.contains(":2\n"), "{text}");
        let (cli, _) =
            run(&["--route", "*@x=null"], "[routes]\n\"a@b\" = \"null\"\n").expect("parsed");
        assert_eq!(cli.trigger.route, ["*@x=null"], "a flag replaces the table");
    }

    #[test]
    fn a_bad_route_names_its_line() {
        let cases = [
            (
                "\n[routes]\n\"a@b\" = \"nowhere\"\n",
                ":3: [routes] \"a@b\": ",
            ),
            (
                "[routes]\n\n\"re:(\" = \"null\"\n",
                ":3: [routes] \"re:(\": ",
            ),
            (
                "[routes]\n\"a@b\" = []\n",
                ":2: [routes] \"a@b\": an empty list",
            ),
            (
                "[routes]\n\"a@b\" = 5\n",
                ":2: [routes] \"a@b\": a URI or a list",
            ),
            ("routes = 5\n", ":1: `routes` is a table"),
            (
                "route = [\"*@x=null\"]\n[routes]\n\"a@b\" = \"null\"\n",
                ":1: give routes either",
            ),
        ];
        for (text, want) in cases {
            let Err(e) = run(&[], text) else {
                panic!("{text:?} was accepted");
            };
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn values_render_as_toml() {
        assert_eq!(literal("25"), "25");
        assert_eq!(literal("0.5"), "0.5");
        assert_eq!(literal("010"), "\"010\"");
        assert_eq!(literal("1.2.3"), "\"1.2.3\"");
        assert_eq!(literal("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
