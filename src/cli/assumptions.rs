//! stub
use std::path::PathBuf;
#[derive(clap::Args, Clone)]
pub struct AssumptionsArgs { #[arg(long, default_value = "rules")] rules: PathBuf }
pub fn run(_a: &AssumptionsArgs) -> u8 { 0 }
