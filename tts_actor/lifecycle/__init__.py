"""Each backend's life: the actor front over bring-up, retry supervision, idle unload and the job runner."""
