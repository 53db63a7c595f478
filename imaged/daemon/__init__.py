"""The long-running process: lifecycle, tracker, watcher, scheduler, state, status server, metrics, notify."""
