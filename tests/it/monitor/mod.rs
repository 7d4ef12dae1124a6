//! Monitoring: alert rules and notifiers, the HTTP endpoints, the status page and the
//! shipped Prometheus rules and Grafana dashboards.

mod access;
mod alerts;
mod alerts_notifiers;
mod http;
mod notifier_tls;
mod page;
mod page_deploy;
