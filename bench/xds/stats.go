package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// percentile is the nearest-rank percentile (p in [0,100]) of d, which it
// sorts; 0 when d is empty.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	rank := int(p/100*float64(len(d))+0.999999) - 1
	return d[min(max(rank, 0), len(d)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// figure is one measured value: a BENCH line and a row of the table.
type figure struct {
	name   string
	value  float64
	format string // e.g. "%.3f"
	unit   string
	target string // human description of the target, if any
	ok     *bool
}

func (f figure) valueString() string { return fmt.Sprintf(f.format, f.value) }

func within(v, limit float64) *bool { ok := v <= limit; return &ok }

// childPid finds a direct child of this process by command name: the
// Consul agent is started by consulagent, which does not expose its pid.
func childPid(comm string) int {
	self := os.Getpid()
	entries, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != comm {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			pid, _ := strconv.Atoi(strings.Fields(s)[0])
			return pid
		}
	}
	return 0
}
