//! The replies of the webhook and command backends.
//!
//! These belong in `samotop_core::reply` (the one table of replies); they live here until
//! they move there. Where core already has the reply (`550 5.1.1`, `552 5.3.4`), it is used.

use samotop_core::Refusal;

/// 554 5.6.0: the webhook refused the message for good (a 4xx other than 404, 410, 413,
/// 429). RFC 3463 X.6.0: other media error.
pub const WEBHOOK_REFUSED: Refusal = Refusal::new(554, [5, 6, 0], "Message refused by the webhook");
/// 451 4.4.1: the webhook cannot be reached (connection refused, no route, DNS).
pub const WEBHOOK_UNREACHABLE: Refusal =
    Refusal::new(451, [4, 4, 1], "Webhook unreachable, try again later");
/// 451 4.4.1: the webhook did not answer within its timeout.
pub const WEBHOOK_TIMEOUT: Refusal = Refusal::new(
    451,
    [4, 4, 1],
    "Webhook did not answer in time, try again later",
);
/// 451 4.4.2: the connection to the webhook broke during the request.
pub const WEBHOOK_LOST: Refusal = Refusal::new(
    451,
    [4, 4, 2],
    "Connection to the webhook lost, try again later",
);
/// 451 4.4.5: the webhook answered 429 Too Many Requests (RFC 3463 X.4.5: congestion).
pub const WEBHOOK_BUSY: Refusal = Refusal::new(451, [4, 4, 5], "Webhook busy, try again later");
/// 451 4.4.0: the webhook answered 5xx.
pub const WEBHOOK_FAILED: Refusal = Refusal::new(451, [4, 4, 0], "Webhook failed, try again later");
/// 451 4.3.5: the webhook answered something we do not take as an answer (1xx, a 3xx
/// redirect: redirects are not followed, the URL wants fixing). RFC 3463 X.3.5: system
/// incorrectly configured; temporary so that nothing is lost while it is fixed.
pub const WEBHOOK_MISCONFIGURED: Refusal = Refusal::new(
    451,
    [4, 3, 5],
    "Webhook answered with a redirect or an odd status, try again later",
);
/// 554 5.3.0: the command failed (an exit code that is not one of the mapped sysexits).
pub const COMMAND_FAILED: Refusal = Refusal::new(554, [5, 3, 0], "Command failed");
/// 451 4.3.0: the command exited 75 (`EX_TEMPFAIL`) or 71 (`EX_OSERR`).
pub const COMMAND_TEMPFAIL: Refusal = Refusal::new(
    451,
    [4, 3, 0],
    "Command failed temporarily, try again later",
);
/// 550 5.7.1: the command exited 77 (`EX_NOPERM`).
pub const COMMAND_NOPERM: Refusal =
    Refusal::new(550, [5, 7, 1], "Delivery not authorized, message refused");
/// 451 4.3.0: the command ran past its time limit; its process group was killed.
pub const COMMAND_TIMEOUT: Refusal = Refusal::new(
    451,
    [4, 3, 0],
    "Command time limit exceeded, try again later",
);
/// 451 4.3.0: the command was killed by a signal (a crash, the OOM killer).
pub const COMMAND_CRASHED: Refusal =
    Refusal::new(451, [4, 3, 0], "Command crashed, try again later");
/// 451 4.3.5: the command could not be started (missing, not executable, out of processes).
pub const COMMAND_UNAVAILABLE: Refusal =
    Refusal::new(451, [4, 3, 5], "Command cannot be started, try again later");
