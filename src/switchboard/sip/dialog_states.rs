//! One rsipstack dialog-state channel for the whole switchboard, routed to
//! the call that owns each dialog.
//!
//! rsipstack reports a dialog's progress on an unbounded tokio channel of
//! `DialogState`, a ~300-byte enum; tokio allocates such a channel's buffer
//! in blocks of 32 slots up front, so a channel per call cost ~10 KiB of every
//! call's memory. Here all dialogs share one channel and a router task moves
//! each event to its call's own inbox, a `futures` channel, which allocates
//! per message and costs ~120 bytes while empty (#16).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::mpsc;
use futures::StreamExt;
use rsipstack::dialog::dialog::{DialogState, DialogStateSender};
use tracing::debug;

use crate::switchboard::burst::ShrinkAfterBurst;

/// Routes the table keeps however few calls are up; above it, it shrinks once
/// three quarters stand empty, as after a burst of calls.
const ROUTES_FLOOR: usize = 64;

/// Each call's inbox, by the Call-ID of every dialog it owns.
type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<DialogState>>>>;

fn lock(routes: &Routes) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<DialogState>>> {
    // A panic elsewhere poisoned the lock; the map itself is still consistent.
    routes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared channel's sending side and the routing table.
pub(crate) struct DialogStateRouter {
    /// Handed to rsipstack for every dialog we create.
    sender: DialogStateSender,
    /// Where each Call-ID's events go.
    routes: Routes,
}

impl DialogStateRouter {
    /// Starts the router task; call from within the tokio runtime.
    pub fn start() -> DialogStateRouter {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<DialogState>();
        let routes: Routes = Arc::default();
        let table = routes.clone();
        tokio::spawn(async move {
            while let Some(state) = receiver.recv().await {
                let call_id = &state.id().call_id;
                let inbox = lock(&table).get(call_id).cloned();
                match inbox {
                    Some(inbox) => {
                        // A call that is ending may have dropped its inbox already.
                        let _ = inbox.unbounded_send(state);
                    }
                    None => debug!(%call_id, ?state, "dialog event for a call that has ended"),
                }
            }
        });
        DialogStateRouter { sender, routes }
    }

    /// Whether a call in progress owns dialogs with Call-ID `call_id`.
    pub fn routes(&self, call_id: &str) -> bool {
        lock(&self.routes).contains_key(call_id)
    }

    /// A call's inbox, receiving the events of dialogs with Call-ID `call_id`.
    pub fn open(&self, call_id: &str) -> CallDialogStates {
        let (inbox, receiver) = mpsc::unbounded();
        let mut states = CallDialogStates {
            sender: self.sender.clone(),
            inbox,
            receiver,
            routes: self.routes.clone(),
            call_ids: Vec::new(),
        };
        states.add(call_id);
        states
    }
}

/// One call's view of its dialogs' events; unregisters itself when dropped.
pub(crate) struct CallDialogStates {
    /// Passed to rsipstack when this call creates a dialog.
    sender: DialogStateSender,
    /// Registered in the routing table for each of `call_ids`.
    inbox: mpsc::UnboundedSender<DialogState>,
    /// Where this call reads its events.
    receiver: mpsc::UnboundedReceiver<DialogState>,
    /// The routing table, to unregister on drop.
    routes: Routes,
    /// Call-IDs routed here: the caller's and every operator attempt's.
    call_ids: Vec<String>,
}

impl CallDialogStates {
    /// Routes the events of dialogs with `call_id` (a new operator attempt) here too.
    pub fn add(&mut self, call_id: &str) {
        lock(&self.routes).insert(call_id.to_string(), self.inbox.clone());
        self.call_ids.push(call_id.to_string());
    }

    /// The sender to give rsipstack for a dialog registered with [`add`](Self::add).
    pub fn sender(&self) -> DialogStateSender {
        self.sender.clone()
    }

    /// The next event of any of this call's dialogs. Cancel-safe.
    pub async fn recv(&mut self) -> Option<DialogState> {
        self.receiver.next().await
    }
}

impl Drop for CallDialogStates {
    fn drop(&mut self) {
        let mut routes = lock(&self.routes);
        for call_id in &self.call_ids {
            routes.remove(call_id);
        }
        routes.shrink_after_burst(ROUTES_FLOOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::dialog::DialogId;

    fn calling(call_id: &str) -> DialogState {
        DialogState::Calling(DialogId {
            call_id: call_id.into(),
            local_tag: "l".into(),
            remote_tag: "r".into(),
        })
    }

    #[tokio::test]
    async fn events_reach_the_call_that_owns_the_dialog_until_it_ends() {
        let router = DialogStateRouter::start();
        let mut first = router.open("caller-1");
        let mut second = router.open("caller-2");
        second.add("operator-2");

        first.sender().send(calling("operator-2")).unwrap();
        first.sender().send(calling("caller-1")).unwrap();
        second.sender().send(calling("caller-2")).unwrap();

        let id = |s: Option<DialogState>| s.map(|s| s.id().call_id.clone());
        assert_eq!(id(first.recv().await).as_deref(), Some("caller-1"));
        assert_eq!(id(second.recv().await).as_deref(), Some("operator-2"));
        assert_eq!(id(second.recv().await).as_deref(), Some("caller-2"));

        drop(second);
        assert!(lock(&router.routes).get("operator-2").is_none());
        assert!(lock(&router.routes).get("caller-2").is_none());
        // Events for an ended call are dropped, not delivered elsewhere.
        first.sender().send(calling("caller-2")).unwrap();
        first.sender().send(calling("caller-1")).unwrap();
        assert_eq!(id(first.recv().await).as_deref(), Some("caller-1"));
    }

    #[tokio::test]
    async fn the_routing_table_gives_back_its_room_after_a_burst() {
        let router = DialogStateRouter::start();
        let mut staying = router.open("staying");
        let burst: Vec<_> = (0..5_000)
            .map(|n| router.open(&format!("burst-{n}")))
            .collect();
        let grown = lock(&router.routes).capacity();
        assert!(grown >= 5_001, "capacity {grown}");
        drop(burst);
        let after = lock(&router.routes).capacity();
        assert!(
            after < 200,
            "capacity {after} after the burst, {grown} at its peak"
        );
        staying.sender().send(calling("staying")).unwrap();
        let id = staying.recv().await.map(|s| s.id().call_id.clone());
        assert_eq!(id.as_deref(), Some("staying"));
    }
}
