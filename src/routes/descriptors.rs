//! `[route.shadow] descriptors`: a protobuf descriptor set (`protoc --include_imports
//! --descriptor_set_out=api.binpb`, or `buf build -o api.binpb`) for a gRPC route, so
//! that its shadowed answers compare by field name (`/0/items/2/price`) rather than by
//! field number. Read when the route files load; a file that cannot be read or decoded
//! refuses the route table like any other error.

use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// Larger files are refused: a descriptor set is kilobytes.
const MAX_BYTES: u64 = 64 << 20;

pub struct Descriptors {
    pool: DescriptorPool,
    pub file: PathBuf,
}

impl std::fmt::Debug for Descriptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Descriptors({})", self.file.display())
    }
}

impl Descriptors {
    pub fn load(file: &Path) -> Result<Descriptors, String> {
        let size = std::fs::metadata(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?
            .len();
        if size > MAX_BYTES {
            return Err(format!("{} is larger than 64 MiB", file.display()));
        }
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let pool = DescriptorPool::decode(bytes.as_slice())
            .map_err(|e| format!("{} is not a protobuf descriptor set: {e}", file.display()))?;
        if pool.services().next().is_none() {
            return Err(format!("{} describes no service", file.display()));
        }
        Ok(Descriptors {
            pool,
            file: file.to_path_buf(),
        })
    }

    /// The answer's message type of the call at `path` (`/package.Service/Method`).
    pub fn output_of(&self, path: &str) -> Option<MessageDescriptor> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
            .map(|m| m.output())
    }
}
