//! Progressive delivery: `machine` judges a rollout step from its stats windows (pure), and
//! `driver` is the task that ticks every running rollout and applies what the machine decides
//! through the one change path. Neither touches a request.

pub mod driver;
pub mod machine;
