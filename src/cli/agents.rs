//! placeholder
/// `orange agents` (placeholder).
#[derive(argh::FromArgs, Debug)]
#[argh(subcommand, name = "agents")]
pub struct AgentsArgs {}
/// placeholder
pub fn run(_args: AgentsArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
