package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The data path is measured by BenchmarkSuite (bench_suite_test.go): direct,
// reverse-proxy-only and tunnel paths side by side, written to
// docs/benchmarks.md by hack/bench.sh.

// cpuSeconds sums user+system CPU time of processes from /proc.
func cpuSeconds(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces).
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		total += (utime + stime) / 100 // USER_HZ is 100 on Linux
	}
	return total
}
