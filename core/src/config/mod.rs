//! What the operator asked for: the command line turned into a validated
//! [`cli::Config`] (CLI-1..9, §6, §7), the address forms it is written in
//! (CLI-4/5/8), and the accept rules (CONN-1).

pub mod addr;
pub mod cli;
pub mod file;
pub mod reload;
pub mod rules;
