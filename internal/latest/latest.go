// Package latest delivers the newest value to a slow reader: sources of
// catalogs and policies send complete values, so a reader that falls
// behind needs only the last one, never a backlog, and a sender never
// blocks on it.
package latest

// Send puts v on a buffered channel of capacity 1, replacing any value the
// reader has not taken yet.
func Send[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}
