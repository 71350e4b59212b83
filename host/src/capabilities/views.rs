//! Per-interface views of a task's capability state: each WIT interface is linked with
//! a view holding the shared call path ([`CallSite`]) and only the slices it uses, so
//! `trace` cannot touch the LLM's scope and `llm` cannot touch the task tree. The
//! `Has*` types are the projections the linker uses (wasmtime's [`HasData`]).
//!
//! | interface    | slices                                   |
//! |--------------|------------------------------------------|
//! | `trace`      | [`TraceState`]                           |
//! | `checkpoint` | [`TraceState`], [`Progress`]             |
//! | `tools`      | [`Progress`] (tool result seqs)          |
//! | `tasks`      | [`TaskScope`], [`Progress`] (children)   |
//! | `llm`        | [`LlmScope`]                             |

use super::{CallSite, LlmScope, Progress, TaskCtx, TaskScope, TraceState};
use wasmtime::component::HasData;

/// `trace`'s view.
pub struct TraceView<'a> {
    pub(crate) site: &'a mut CallSite,
    pub(crate) trace: &'a mut TraceState,
}

/// `checkpoint`'s view: the steps and progress a checkpoint's host state records.
pub struct CheckpointView<'a> {
    pub(crate) site: &'a mut CallSite,
    pub(crate) trace: &'a mut TraceState,
    pub(crate) progress: &'a mut Progress,
}

/// `tools`' view.
pub struct ToolsView<'a> {
    pub(crate) site: &'a mut CallSite,
    pub(crate) progress: &'a mut Progress,
}

/// `tasks`' view.
pub struct TasksView<'a> {
    pub(crate) site: &'a mut CallSite,
    pub(crate) tasks: &'a mut TaskScope,
    pub(crate) progress: &'a mut Progress,
}

/// `llm`'s view.
pub struct LlmView<'a> {
    pub(crate) site: &'a mut CallSite,
    pub(crate) llm: &'a mut LlmScope,
}

impl TaskCtx {
    pub(crate) fn trace_view(&mut self) -> TraceView<'_> {
        TraceView {
            site: &mut self.site,
            trace: &mut self.trace,
        }
    }

    pub(crate) fn checkpoint_view(&mut self) -> CheckpointView<'_> {
        CheckpointView {
            site: &mut self.site,
            trace: &mut self.trace,
            progress: &mut self.progress,
        }
    }

    pub(crate) fn tools_view(&mut self) -> ToolsView<'_> {
        ToolsView {
            site: &mut self.site,
            progress: &mut self.progress,
        }
    }

    pub(crate) fn tasks_view(&mut self) -> TasksView<'_> {
        TasksView {
            site: &mut self.site,
            tasks: &mut self.tasks,
            progress: &mut self.progress,
        }
    }

    pub(crate) fn llm_view(&mut self) -> LlmView<'_> {
        LlmView {
            site: &mut self.site,
            llm: &mut self.llm,
        }
    }
}

/// Projects a store onto `trace`'s view.
pub struct HasTrace;
impl HasData for HasTrace {
    type Data<'a> = TraceView<'a>;
}

/// Projects a store onto `checkpoint`'s view.
pub struct HasCheckpoint;
impl HasData for HasCheckpoint {
    type Data<'a> = CheckpointView<'a>;
}

/// Projects a store onto `tools`' view.
pub struct HasTools;
impl HasData for HasTools {
    type Data<'a> = ToolsView<'a>;
}

/// Projects a store onto `tasks`' view.
pub struct HasTasks;
impl HasData for HasTasks {
    type Data<'a> = TasksView<'a>;
}

/// Projects a store onto `llm`'s view.
pub struct HasLlm;
impl HasData for HasLlm {
    type Data<'a> = LlmView<'a>;
}
