package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NginxCPU is the CPU time (user+system) of one nginx instance, read from
// /proc: the master's own, and its workers'. Workers counts every worker
// the master ever had, including the ones that exited: a live (or zombie)
// child's utime+stime from its /proc/PID/stat, plus the master's cutime+
// cstime, which the kernel adds a child's times to when the master reaps it
// (old workers of a reload end there).
type NginxCPU struct {
	Master, Workers time.Duration
}

// Sub returns n - from.
func (n NginxCPU) Sub(from NginxCPU) NginxCPU {
	return NginxCPU{Master: n.Master - from.Master, Workers: n.Workers - from.Workers}
}

// Add returns n + o.
func (n NginxCPU) Add(o NginxCPU) NginxCPU {
	return NginxCPU{Master: n.Master + o.Master, Workers: n.Workers + o.Workers}
}

// sumNginxCPU is the pure part of ReadNginxCPU: the master's stat and its
// (live or zombie) children's stats.
func sumNginxCPU(master procStat, children []procStat) NginxCPU {
	out := NginxCPU{Master: master.CPU, Workers: master.Reaped}
	for _, c := range children {
		out.Workers += c.CPU
	}
	return out
}

// ReadNginxCPU reads the CPU time of an nginx master and of all its workers
// (see NginxCPU). A worker reaped during the scan of /proc would be counted
// twice or not at all, so the scan is repeated (at most 5 times) until the
// master's reaped-children time is the same before and after it.
func ReadNginxCPU(masterPID int) (NginxCPU, error) {
	var last NginxCPU
	for range 5 {
		before, err := readProcStat(masterPID)
		if err != nil {
			return NginxCPU{}, fmt.Errorf("cpu of nginx master %d: %w", masterPID, err)
		}
		var kids []procStat
		for _, pid := range childPIDs(masterPID, true) {
			if st, err := readProcStat(pid); err == nil && st.PPID == masterPID {
				kids = append(kids, st)
			}
		}
		after, err := readProcStat(masterPID)
		if err != nil {
			return NginxCPU{}, fmt.Errorf("cpu of nginx master %d: %w", masterPID, err)
		}
		last = sumNginxCPU(after, kids)
		if after.Reaped == before.Reaped {
			return last, nil
		}
	}
	return last, nil
}

// childPIDs lists the processes whose parent is pid, from /proc; zombies
// (exited, not yet reaped) only with zombies.
func childPIDs(pid int, zombies bool) []int {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil
	}
	var out []int
	for _, d := range dirs {
		child, err := strconv.Atoi(filepath.Base(d))
		if err != nil || child == pid {
			continue
		}
		st, err := readProcStat(child)
		if err != nil || st.PPID != pid || (st.State == "Z" && !zombies) {
			continue
		}
		out = append(out, child)
	}
	return out
}

// LiveChildren returns the live (not zombie) children of pid: an nginx
// master's workers, old ones draining after a reload included.
func LiveChildren(pid int) []int { return childPIDs(pid, false) }

// ReadRSS returns the resident set size of pid (VmRSS of /proc/PID/status).
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// parseVmRSS returns the "VmRSS:  1234 kB" line of /proc/PID/status in bytes.
func parseVmRSS(status string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status: VmRSS line %q: want \"N kB\"", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("/proc status: VmRSS line %q: %v", line, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("/proc status: no VmRSS line (a zombie, or a kernel thread)")
}
