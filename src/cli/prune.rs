//! `cpvault prune`'s arguments: the store, the retention rules (declared once, with their
//! config keys, as [`Policy`]) and the grace period. Describes only; the plan is
//! [`crate::plan::prune`]'s.

use clap::Args;

use super::{MetricsArgs, StoreArgs, TrustArgs};
use crate::plan::retention::Policy;

/// `prune`.
#[derive(Debug, Args)]
#[command(
    after_help = "Rules are restic's and are ORed; each period keeps its newest backup; \
the newest backup of every cluster is always kept; with no rule at all nothing is removed. \
Without flags, the policy comes from [retention] and [clusters.NAME.retention] in the config file."
)]
pub struct PruneArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Only this cluster's backups.
    #[arg(long, env = "CPVAULT_CLUSTER")]
    pub cluster: Option<String>,
    /// Show what would be kept and removed, and why; remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// The retention rules (declared with their config keys in [`Policy`]).
    #[command(flatten)]
    pub policy: Policy,
    /// Time zone for hour/day/week/month/year buckets (IANA name).
    #[arg(
        long,
        value_name = "ZONE",
        default_value = "UTC",
        env = "CPVAULT_TIMEZONE"
    )]
    pub timezone: chrono_tz::Tz,
    /// Archives without a manifest are removed once older than this many hours (younger ones
    /// may be uploads in progress).
    #[arg(long, value_name = "HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
    pub grace_hours: u32,
    /// Also remove manifests whose archive object is missing (reported otherwise).
    #[arg(long)]
    pub remove_broken: bool,
    /// With --allowed-signers: also remove backups that are not trusted (reported and left
    /// in place otherwise). They never count toward the keep rules.
    #[arg(long, requires = "allowed_signers")]
    pub remove_untrusted: bool,
}
