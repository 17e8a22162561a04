"""Worker engines: loops that claim runs and execute them. They own threads or tasks;
every database operation they need comes from :class:`durably.leases.LeaseService`."""
