//! placeholder
/// `orange task` (placeholder).
#[derive(argh::FromArgs, Debug)]
#[argh(subcommand, name = "task")]
pub struct TaskArgs {}
/// placeholder
pub fn run(_args: TaskArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
