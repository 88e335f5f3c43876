//! The live handles a node shares among its role hosts, kept apart from the
//! settings (data only, [`crate::settings`]) that role logic reads: the
//! hosts use these to carry out effects, the logic never sees them.

use std::sync::Arc;

use crate::ids::slots::FanoutSlots;
use crate::push::Pusher;
use mlsd_roles::settings::DEFAULT_MAX_FANOUTS;

/// What the role hosts of one node share at run time.
#[derive(Clone)]
pub struct NodeServices {
    /// The node's push queue, started by the node where it hosts the ODS;
    /// `None` sends no notifications.
    pub push: Option<Pusher>,
    /// Fan-outs the node runs at once, shared by its group actors.
    pub fanout_slots: Arc<FanoutSlots>,
}

impl NodeServices {
    /// No push queue and the default fan-out slots: for tests and tools
    /// that host roles without a node.
    pub fn standalone() -> NodeServices {
        NodeServices { push: None, fanout_slots: FanoutSlots::new(DEFAULT_MAX_FANOUTS) }
    }
}
