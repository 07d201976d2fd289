package pid1

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// waitZombie waits until every pid is a zombie child of this process.
func waitZombie(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		z := zombieChildren()
		all := true
		for _, pid := range pids {
			all = all && z[pid]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("children %v did not become zombies", pids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A child someone waits for keeps its exit status; a child nobody waits
// for is collected once it has been a zombie for the grace period.
func TestReapOnlyUnwaitedZombies(t *testing.T) {
	owned := exec.Command("sh", "-c", "exit 3")
	orphan := exec.Command("true")
	if err := owned.Start(); err != nil {
		t.Fatal(err)
	}
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	waitZombie(t, owned.Process.Pid, orphan.Process.Pid)
	seen := map[int]time.Time{}
	now := time.Now()
	reapOld(seen, now)
	if !zombieChildren()[orphan.Process.Pid] {
		t.Fatal("the orphan was collected at once, before the grace period")
	}
	err := owned.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("the owner's Wait: %v; want exit status 3", err)
	}
	reapOld(seen, now.Add(zombieGrace))
	if zombieChildren()[orphan.Process.Pid] {
		t.Fatal("the orphan is still a zombie after the grace period")
	}
	if len(seen) != 0 {
		t.Errorf("seen %v after every zombie was collected", seen)
	}
}

// A scan with no exited child forgets the zombies it knew of.
func TestReapWithoutZombiesClearsSeen(t *testing.T) {
	seen := map[int]time.Time{1 << 30: time.Now()}
	reapOld(seen, time.Now())
	if len(seen) != 0 {
		t.Errorf("seen %v", seen)
	}
}

// The loop collects an unwaited zombie after the grace period with no
// further SIGCHLD: one signal arms the timer for the later scan.
func TestReapLoopCollectsAfterGrace(t *testing.T) {
	ch := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() { reapLoop(ch); close(done) }()
	defer func() { close(ch); <-done }()

	orphan := exec.Command("true")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	pid := orphan.Process.Pid
	waitZombie(t, pid)
	start := time.Now()
	ch <- os.Interrupt // stands for the SIGCHLD
	deadline := start.Add(zombieGrace + 5*time.Second)
	for zombieChildren()[pid] {
		if time.Now().After(deadline) {
			t.Fatal("the zombie was not collected after the grace period")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(start); d < zombieGrace {
		t.Errorf("the zombie was collected after %v, within the grace period", d)
	}
}
