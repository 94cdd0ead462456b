//! The replies the SPF guard sends. Their texts are replaced at run time with the domain,
//! the IP and the reason; the codes stay.

use samotop_core::Reply;

/// 550 5.7.23: the sender's domain does not permit the peer's IP (SPF `fail`, RFC 7208 8.4,
/// RFC 7372 3.2). Sent at MAIL under [`Policy::Reject`](crate::Policy::Reject), with a text like
/// `SPF check failed: example.org does not designate 192.0.2.1 as permitted sender`.
pub const SPF_FAIL: Reply = Reply::new(550, [5, 7, 23], "SPF check failed");

/// 451 4.7.24: the SPF check could not be completed, try again later (SPF `temperror`:
/// DNS failure or time-out, RFC 7208 8.6, RFC 7372 3.2). Sent at MAIL under
/// [`Policy::Reject`](crate::Policy::Reject).
pub const SPF_TEMPERROR: Reply = Reply::new(
    451,
    [4, 7, 24],
    "SPF check could not be completed, try again later",
);
