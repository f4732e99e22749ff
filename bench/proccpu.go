package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// sysconf(_SC_CLK_TCK)), 100 per second on every Linux this runs on.
const clockTick = 10 * time.Millisecond

// procStat is what bench reads of /proc/<pid>/stat.
type procStat struct {
	Name  string
	State string
	PPID  int
	CPU   time.Duration // utime + stime
	// Reaped is cutime + cstime (fields 16 and 17): the CPU time of the
	// children this process has waited for.
	Reaped time.Duration
}

// readProcStat parses /proc/<pid>/stat: the name is between the first "("
// and the last ")", then state, ppid, ..., utime (field 14), stime (15),
// cutime (16) and cstime (17).
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(b))
}

func parseProcStat(s string) (procStat, error) {
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return procStat{}, fmt.Errorf("/proc stat: no (name) in %.80q", s)
	}
	f := strings.Fields(s[close+1:])
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc stat: want >= 17 fields, got %d", len(f)+2)
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	cut, err4 := strconv.ParseInt(f[13], 10, 64)
	cst, err5 := strconv.ParseInt(f[14], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
		return procStat{}, fmt.Errorf("/proc stat: ppid/utime/stime/cutime/cstime not numbers in %.120q", s)
	}
	return procStat{Name: s[open+1 : close], State: f[0], PPID: ppid, CPU: time.Duration(ut+st) * clockTick,
		Reaped: time.Duration(cut+cst) * clockTick}, nil
}

// TreeCPU is the CPU time of a process and of its direct children (Vault's
// plugin processes), by child name.
type TreeCPU struct {
	// Self is the process's own CPU time.
	Self time.Duration
	// Children maps a child's pid to its name and CPU time.
	Children map[int]procStat
}

// ReadTreeCPU reads the CPU time of pid and of every process whose parent
// is pid, from /proc.
func ReadTreeCPU(pid int) (TreeCPU, error) {
	self, err := readProcStat(pid)
	if err != nil {
		return TreeCPU{}, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	out := TreeCPU{Self: self.CPU, Children: map[int]procStat{}}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return out, err
	}
	for _, d := range dirs {
		child, err := strconv.Atoi(filepath.Base(d))
		if err != nil || child == pid {
			continue
		}
		st, err := readProcStat(child)
		if err != nil || st.PPID != pid {
			continue // gone, or not a child
		}
		// comm is cut to 15 characters ("vault-plugin-se" for every
		// plugin): name a child by its executable instead.
		if b, err := os.ReadFile(filepath.Join(d, "cmdline")); err == nil && len(b) > 0 {
			argv0, _, _ := strings.Cut(string(b), "\x00")
			st.Name = filepath.Base(argv0)
		}
		out.Children[child] = st
	}
	return out, nil
}

// Since returns the CPU spent between from and t: the process's own, and
// its children's by name (a child that appeared after from counts from 0).
func (t TreeCPU) Since(from TreeCPU) (self time.Duration, children map[string]time.Duration) {
	children = map[string]time.Duration{}
	for pid, c := range t.Children {
		d := c.CPU
		if f, ok := from.Children[pid]; ok {
			d -= f.CPU
		}
		children[c.Name] += d
	}
	return t.Self - from.Self, children
}
