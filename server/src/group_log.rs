//! PLACEHOLDER (replaced by branch group-log): the durable store of the metadata group.
#![allow(missing_docs, unused_variables, clippy::unused_async)]
use std::path::Path;

use runnel_replicate::group::{GroupStore, Persist, StoredSnapshot};

use crate::error::FatalError;
use crate::metadata_log::AppendError;

pub struct GroupLog;
impl GroupLog {
    pub async fn open(data_dir: &Path) -> Result<Option<(GroupLog, GroupStore)>, FatalError> {
        todo!()
    }
    pub async fn create(data_dir: &Path, initial: &GroupStore) -> Result<GroupLog, FatalError> {
        todo!()
    }
    pub async fn write(&mut self, persist: &Persist) -> Result<(), AppendError> {
        todo!()
    }
    pub async fn set_commit(&mut self, commit: u64) -> Result<(), AppendError> {
        todo!()
    }
    pub async fn compact(&mut self, snapshot: &StoredSnapshot) -> Result<(), AppendError> {
        todo!()
    }
}
pub async fn migrate(
    data_dir: &Path,
    node_id: u64,
) -> Result<Option<(GroupLog, GroupStore)>, FatalError> {
    todo!()
}
