//! stub
use std::path::PathBuf;
#[derive(clap::Args, Clone)]
pub struct ImpactArgs { #[arg(long, default_value = "rules")] rules: PathBuf }
pub fn run(_a: &ImpactArgs) -> u8 { 0 }
