//! `orange agent`: placeholder until the poll loop lands.

/// Agent settings (placeholder).
pub struct AgentConfig;

impl AgentConfig {
    /// Validates flags (placeholder).
    pub fn from_args(_args: crate::cli::AgentArgs) -> anyhow::Result<Self> {
        anyhow::bail!("not built yet")
    }
}

/// Runs the agent (placeholder).
pub fn run_blocking(_config: AgentConfig) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
