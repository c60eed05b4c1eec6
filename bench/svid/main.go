// Command svid measures the SPIFFE CA's signing rate: how many X.509-SVIDs
// (ECDSA P-256 key generation plus signature) it issues per second, and how
// long issuing a thousand takes; then how long the control plane takes to
// rotate the SVIDs of a thousand connected proxies, and what that costs in
// CPU. It prints BENCH lines for `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"medmesh/certs"
)

func main() {
	n := flag.Int("n", 1000, "SVIDs to issue")
	proxies := flag.Int("proxies", 1000, "connected proxies whose SVIDs are rotated (0: skip)")
	services := flag.Int("services", 50, "services the proxies belong to")
	medmesh := flag.String("medmesh", "bin/medmesh", "the medmesh binary (make build)")
	flag.Parse()
	signing(*n)
	if *proxies > 0 {
		if err := rotation(context.Background(), *medmesh, *proxies, *services); err != nil {
			fail(err)
		}
	}
}

// signing issues n SVIDs on every core and prints the rate.
func signing(n int) {
	dir, err := os.MkdirTemp("", "medmesh-svid-bench-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: dir})
	if err != nil {
		fail(err)
	}
	id, err := ca.ServiceID("default", "emr")
	if err != nil {
		fail(err)
	}
	// One worker per core, as the control plane signs renewals in parallel
	// with everything else it does.
	workers := runtime.GOMAXPROCS(0)
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	var once sync.Once
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if _, err := ca.NewSVID(id); err != nil {
					once.Do(func() { fail(err) })
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	fmt.Printf("issued %d SVIDs (key generation + signature) in %s on %d cores\n", n, elapsed.Round(time.Millisecond), workers)
	fmt.Printf("BENCH svid_signs_per_s=%.0f\n", float64(n)/elapsed.Seconds())
	fmt.Printf("BENCH svid_issue_%d_s=%.3f\n", n, elapsed.Seconds())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "svid bench:", err)
	os.Exit(1)
}
