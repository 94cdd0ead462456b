//! The replies the SPF guard sends. Like every reply code, they live in the table of
//! [`samotop_core::reply`]; their texts are replaced at run time with the domain, the IP and
//! the reason.

pub use samotop_core::reply::{SPF_FAIL, SPF_TEMPERROR};
