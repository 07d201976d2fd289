package pid1

import (
	"os/exec"
	"testing"
	"time"
)

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
	time.Sleep(200 * time.Millisecond) // both are zombies now
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
}
