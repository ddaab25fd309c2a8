"""Audio building blocks shared by the audio plugins (the log-mel front end)."""
