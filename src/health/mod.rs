//! What is known about servers, kept outside the table so that a swap keeps it: availability
//! (health, ejection, drain) and in-flight counts. Active checks and passive ejection write here;
//! the decision reads it through `route::HealthView`.

pub mod active;
pub mod passive;
pub mod registry;
