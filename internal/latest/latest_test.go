package latest

import "testing"

// A slow reader gets the newest value, never a stale one and never a
// blocked sender.
func TestSend(t *testing.T) {
	ch := make(chan int, 1)
	Send(ch, 1)
	Send(ch, 2)
	Send(ch, 3)
	if got := <-ch; got != 3 {
		t.Errorf("read %d, want 3", got)
	}
	select {
	case v := <-ch:
		t.Errorf("a second value %d was queued", v)
	default:
	}
}
