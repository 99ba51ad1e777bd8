package storage

// Queued is how many writes wait for g's next batch.
func Queued(g *GroupCommit) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}
