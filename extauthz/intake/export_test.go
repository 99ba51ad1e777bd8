package intake

// WaitsQueued is how many writes of r wait for the next shared wait.
func WaitsQueued(r *Revoker) int {
	s := r.follower.(*sharedWaits)
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}
