// Package procstat reads what the kernel says about a process's memory and
// CPU time, for the benchmarks.
package procstat

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Stat is what the kernel says about one process's memory and CPU.
type Stat struct {
	RSSMiB  float64 // VmRSS: resident now
	PeakMiB float64 // VmHWM: the high-water mark of resident memory
	CPU     time.Duration
}

// Read reads /proc/<pid>/status and /proc/<pid>/stat. The peak is
// the kernel's own high-water mark, so a short spike between two samples
// is never missed.
func Read(pid int) (Stat, error) {
	var s Stat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			s.RSSMiB = kb / 1024
		case "VmHWM:":
			s.PeakMiB = kb / 1024
		}
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// numeric fields start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	s.CPU = time.Duration(utime+stime) * time.Second / time.Duration(clockTicks())
	return s, nil
}

// clockTicks is sysconf(_SC_CLK_TCK) without cgo: the kernel passes it to
// every process in the auxiliary vector as AT_CLKTCK. It is 100 on every
// common Linux configuration, which is the fallback.
func clockTicks() uint64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	for i := 0; i+16 <= len(b); i += 16 {
		key, val := binary.NativeEndian.Uint64(b[i:]), binary.NativeEndian.Uint64(b[i+8:])
		if key == atClkTck && val > 0 {
			return val
		}
		if key == 0 {
			break
		}
	}
	return 100
}
