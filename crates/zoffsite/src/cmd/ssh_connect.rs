//! `zoffsite ssh-connect` (hidden): the ProxyCommand of the ssh a backup
//! starts toward a box whose target names a TCP congestion control
//! (`zoffsite_exec::ssh`, which builds that ssh's argv, says why). ssh reads
//! the connected socket from this command's stdout (`ProxyUseFdpass`) and
//! waits for it to exit. Its stderr is ssh's, so a failure to connect reads
//! as ssh's own would, and is classified the same way.

use std::time::Duration;

use zoffsite_exec::ssh::{self, Congestion};

use crate::cli::SshConnectArgs;
use crate::exit::Exit;
use crate::ui::Ui;

pub(crate) fn run(args: &SshConnectArgs) -> Exit {
    let mut ui = Ui::new(false, false);
    let stdout = std::io::stdout();
    match ssh::connect_and_pass(
        &args.host,
        args.port,
        &args.congestion_control,
        Duration::from_secs(args.timeout),
        &stdout,
    ) {
        // Not an error: the backup goes on at the system's default, which
        // only its speed on a lossy line shows.
        Ok(Congestion::Refused(why)) => tracing::debug!(
            "the kernel refused TCP congestion control {} ({why}): this connection uses the system's default",
            args.congestion_control
        ),
        Ok(Congestion::Set) => {}
        Err(e) => ui.err(Exit::Error, e),
    }
    ui.exit()
}
