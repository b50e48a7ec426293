//! The commands, one module per group of subcommands. Each takes its
//! parsed arguments and returns the process's exit status.

#[cfg(feature = "bench")]
pub mod bench;
pub mod dlq;
pub mod events;
pub mod handlers;
pub mod new;
pub mod publish;
pub mod run;
pub mod test;
