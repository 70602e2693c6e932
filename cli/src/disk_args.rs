//! The disk tier's settings, as the commands that open a directory take them.

use larder::{Cache, CacheBuilder};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DiskArgs {
    /// The disk tier's directory.
    #[arg(long)]
    pub disk_dir: PathBuf,
    /// The disk tier's capacity in MiB (as it was created with).
    #[arg(long, default_value_t = 256)]
    pub disk_mib: u64,
    /// Segment size in MiB (as the directory was created with).
    #[arg(long, default_value_t = 16)]
    pub segment_mib: u64,
    /// Memory capacity in MiB.
    #[arg(long, default_value_t = 32)]
    pub memory_mib: u64,
}

impl DiskArgs {
    /// A builder with these settings.
    pub fn builder(&self) -> CacheBuilder {
        Cache::builder()
            .memory_capacity(self.memory_mib << 20)
            .disk(&self.disk_dir, self.disk_mib << 20)
            .segment_size(self.segment_mib << 20)
    }
}
