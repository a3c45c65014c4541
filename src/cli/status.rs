//! stub
use std::path::PathBuf;
#[derive(clap::Args, Clone)]
pub struct StatusArgs { #[arg(long, default_value = "rules")] rules: PathBuf }
pub fn run(_a: &StatusArgs) -> u8 { 0 }
