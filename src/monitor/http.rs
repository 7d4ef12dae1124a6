//! The monitor listener: `/health`, `/ready`, `/metrics`.
