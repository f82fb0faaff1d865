//! `veer ctl`: the admin API's command-line client.
