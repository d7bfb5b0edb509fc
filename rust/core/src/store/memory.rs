//! The in-memory store: the default, for tests and short-lived processes. Holds records as bytes,
//! exactly like a durable store, so a workflow that runs here runs unchanged on disk.

use std::collections::HashMap;

use super::{
    check_version, effective_due, finished_instance, purge_selects, Commit, Created, InstanceMeta, ListQuery, Store,
    StoredInstance,
};
use crate::error::{CoreError, Result};
use crate::status::Status;

struct Entry {
    meta: InstanceMeta,
    header: Vec<u8>,
    log: Vec<Vec<u8>>,
    inbox: Vec<Vec<u8>>,
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
            Entry {
                meta: meta.clone(),
                header: header.to_vec(),
                log: records.to_vec(),
                inbox: Vec::new(),
                seq: self.seq,
            },
        );
        Ok(Created::New)
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<()> {
        let e = self.entries.get_mut(c.id).ok_or_else(|| CoreError::UnknownInstance(c.id.to_string()))?;
        check_version(c.id, c.expected_version, e.meta.version)?;
        e.meta.version += 1;
        e.meta.status = c.status;
        e.meta.updated_at = c.updated_at;
        e.meta.due_at = effective_due(c, e.inbox.len() as u64);
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

    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64> {
        let e = self.entries.get_mut(id).ok_or_else(|| CoreError::UnknownInstance(id.to_string()))?;
        if e.meta.status.is_finished() {
            return Err(finished_instance(id, e.meta.status));
        }
        e.inbox.push(record.to_vec());
        e.meta.due_at = Some(e.meta.due_at.map_or(now, |d| d.min(now)));
        Ok(e.inbox.len() as u64)
    }

    fn signals(&mut self, id: &str) -> Result<Vec<(u64, Vec<u8>)>> {
        Ok(self
            .entries
            .get(id)
            .map(|e| e.inbox.iter().enumerate().map(|(i, r)| (i as u64 + 1, r.clone())).collect())
            .unwrap_or_default())
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>> {
        let mut hits: Vec<&InstanceMeta> = self
            .entries
            .values()
            .map(|e| &e.meta)
            .filter(|m| m.status == Status::Suspended && m.due_at.is_some_and(|d| d <= now))
            .collect();
        hits.sort_by(|a, b| a.due_at.unwrap_or(0.0).total_cmp(&b.due_at.unwrap_or(0.0)));
        if let Some(n) = limit {
            hits.truncate(n);
        }
        Ok(hits.into_iter().cloned().collect())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
