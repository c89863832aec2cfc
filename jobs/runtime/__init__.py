"""The worker process: its loop over the job streams, its metrics and its JSON logs."""
