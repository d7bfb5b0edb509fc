//! The in-memory store: the default, for tests and short-lived processes. Holds records as bytes,
//! exactly like a durable store, so a workflow that runs here runs unchanged on disk.

use std::collections::HashMap;

use super::{check_version, purge_selects, Commit, Created, InstanceMeta, ListQuery, Store, StoredInstance};
use crate::error::{CoreError, Result};
use crate::status::Status;

struct Entry {
    meta: InstanceMeta,
    header: Vec<u8>,
    log: Vec<Vec<u8>>,
    seq: u64,
}

/// A store that lives in this process's memory and is gone when it exits.
#[derive(Default)]
pub struct MemoryStore {
    entries: HashMap<String, Entry>,
    seq: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created> {
        if let Some(e) = self.entries.get(&meta.id) {
            return Ok(Created::Existing(StoredInstance { meta: e.meta.clone(), header: e.header.clone() }));
        }
        self.seq += 1;
        self.entries.insert(
            meta.id.clone(),
            Entry { meta: meta.clone(), header: header.to_vec(), log: records.to_vec(), seq: self.seq },
        );
        Ok(Created::New)
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<()> {
        let e = self.entries.get_mut(c.id).ok_or_else(|| CoreError::UnknownInstance(c.id.to_string()))?;
        check_version(c.id, c.expected_version, e.meta.version)?;
        e.meta.version += 1;
        e.meta.status = c.status;
        e.meta.updated_at = c.updated_at;
        e.meta.due_at = c.due_at;
        if let Some(h) = c.header {
            e.header = h.to_vec();
        }
        e.log.extend(c.records.iter().cloned());
        Ok(())
    }

    fn commit_many(&mut self, commits: &[Commit<'_>]) -> Result<()> {
        // validate the whole batch first (a batch may name one instance twice: each commit then
        // expects the version the previous one left), so that it is all or nothing
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for c in commits {
            let current = match versions.get(c.id) {
                Some(v) => *v,
                None => {
                    self.entries.get(c.id).ok_or_else(|| CoreError::UnknownInstance(c.id.to_string()))?.meta.version
                }
            };
            check_version(c.id, c.expected_version, current)?;
            versions.insert(c.id, current + 1);
        }
        commits.iter().try_for_each(|c| self.commit(c))
    }

    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>> {
        Ok(self.entries.get(id).map(|e| StoredInstance { meta: e.meta.clone(), header: e.header.clone() }))
    }

    fn records(&mut self, id: &str) -> Result<Vec<Vec<u8>>> {
        Ok(self.entries.get(id).map(|e| e.log.clone()).unwrap_or_default())
    }

    fn list(&mut self, q: &ListQuery) -> Result<Vec<InstanceMeta>> {
        let mut hits: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| q.statuses.is_empty() || q.statuses.contains(&e.meta.status))
            .filter(|e| q.workflow.as_deref().is_none_or(|w| e.meta.workflow == w))
            .collect();
        hits.sort_by_key(|e| std::cmp::Reverse(e.seq));
        if let Some(n) = q.limit {
            hits.truncate(n);
        }
        Ok(hits.into_iter().map(|e| e.meta.clone()).collect())
    }

    fn delete(&mut self, id: &str) -> Result<bool> {
        Ok(self.entries.remove(id).is_some())
    }

    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64> {
        let n = self.entries.len();
        self.entries.retain(|_, e| !(e.meta.updated_at < before && purge_selects(e.meta.status, statuses)));
        Ok((n - self.entries.len()) as u64)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
