package main

import (
	"bytes"
	"os"
	"runtime/metrics"
	"runtime/pprof"
)

// startCPUProfile profiles this process until the returned func is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// heapSampler keeps the heap profile taken when the in-use heap was
// largest: a profile taken once at the end would miss the peak of a
// thousand proxies connecting at once. Sampling reads one runtime metric;
// a profile is written only when a new peak is seen.
type heapSampler struct {
	path string
	peak uint64
	err  error
}

func newHeapSampler(path string) *heapSampler { return &heapSampler{path: path} }

func (h *heapSampler) sample() {
	if h == nil || h.path == "" || h.err != nil {
		return
	}
	// runtime/metrics, unlike ReadMemStats, does not stop the world.
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	inUse := s[0].Value.Uint64()
	if inUse <= h.peak*11/10 { // rewrite only on a 10% larger peak
		return
	}
	h.peak = inUse
	var b bytes.Buffer
	if h.err = pprof.Lookup("heap").WriteTo(&b, 0); h.err == nil {
		h.err = os.WriteFile(h.path, b.Bytes(), 0o644)
	}
}
