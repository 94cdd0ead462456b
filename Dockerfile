# samotop, the mail receiver, as an image FROM scratch: one static binary, no shell, no
# libraries, a numeric non-root user.
#
#   docker build -t samotop .
#   install -d -o 10025 -g 10025 /srv/mail
#   docker run -p 25:25 -v /srv/mail:/mail samotop
#
# Port 25 as a non-root user: Docker (20.10 and later) and Podman set
# net.ipv4.ip_unprivileged_port_start=0 in a container's own network namespace, so the
# default command can listen on 25. Where that is not so (host networking, an older engine,
# some Kubernetes runtimes), either pass `--sysctl net.ipv4.ip_unprivileged_port_start=25`
# (not with host networking) or listen on a high port and map it:
#   docker run -p 25:2525 -v /srv/mail:/mail samotop --smtp 0.0.0.0:2525 --deliver maildir:/mail \
#       --spf off --dkim off --dmarc off
#
# SPF, DKIM and DMARC are off in the default command, so that the image starts with nothing
# but itself on the filesystem. `--spf tag --dkim tag --dmarc tag` (the binary's defaults)
# read /etc/resolv.conf, which Docker provides in containers; or give `--dns IP:PORT`. Host names (in --smtp, --deliver
# lmtp:HOST:PORT) resolve through the container's /etc/hosts and resolv.conf; IP addresses
# need neither.
#
# tests/integration/test_static.py proves this image without a Docker engine: the same
# static build, alone in an empty chroot, run as 10025:10025 with this file's CMD.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The same flags, target and release profile as outside Docker: the script is the recipe.
RUN scripts/build-static --locked \
    && mkdir -p /out/mail/tmp /out/mail/new /out/mail/cur /out/tmp \
    && cp target/x86_64-unknown-linux-gnu/release/samotop /out/samotop

FROM scratch
COPY --from=build /out/samotop /samotop
# An empty Maildir owned by the user: a named volume starts as a copy of it. A bind-mounted
# host directory must be writable by 10025 (see above).
COPY --from=build --chown=10025:10025 /out/mail /mail
# The temporary directory (TMPDIR's default): a message past the in-memory bound of a spool
# (the end-of-data checks, a webhook, the inbox's staging) moves into an unlinked file here,
# encrypted with a per-message key. Without it such a message could only get 451.
COPY --from=build --chown=10025:10025 /out/tmp /tmp
USER 10025:10025
EXPOSE 25 465
VOLUME /mail
ENTRYPOINT ["/samotop"]
CMD ["--smtp", "0.0.0.0:25", "--deliver", "maildir:/mail", "--spf", "off", "--dkim", "off", "--dmarc", "off"]
# `docker stop` waits 10 s before SIGKILL; samotop gives sessions in flight up to
# --shutdown-grace (30 s) after SIGTERM. Use `docker stop -t 35` to let them finish. An
# interrupted session is never acknowledged, so nothing is lost either way.
