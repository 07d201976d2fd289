package timesync

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Sample is one server's answer.
type Sample struct {
	Server  string
	Offset  time.Duration // how far the local clock is behind the server
	RTT     time.Duration
	Stratum int
}

// agreement is how far apart two servers' offsets may be and still count
// as agreeing, beyond what their round trips explain.
const agreement = 100 * time.Millisecond

// choose picks the offset to believe: the largest group of samples that
// agree with each other, if it is a strict majority of the servers that
// answered; its median offset, and its server with the shortest round
// trip. A lone server is believed; two that disagree are not, since
// nothing says which is wrong.
func choose(samples []Sample) (Sample, int, error) {
	if len(samples) == 0 {
		return Sample{}, 0, errors.New("no server answered")
	}
	var best []Sample
	for _, s := range samples {
		var group []Sample
		for _, o := range samples {
			if within(s, o) {
				group = append(group, o)
			}
		}
		if len(group) > len(best) {
			best = group
		}
	}
	if 2*len(best) <= len(samples) {
		return Sample{}, 0, fmt.Errorf("no majority: the %d servers that answered disagree", len(samples))
	}
	offsets := make([]time.Duration, len(best))
	for i, s := range best {
		offsets[i] = s.Offset
	}
	slices.Sort(offsets)
	pick := slices.MinFunc(best, func(a, b Sample) int { return int(a.RTT - b.RTT) })
	pick.Offset = offsets[len(offsets)/2]
	return pick, len(best), nil
}

func within(a, b Sample) bool {
	d := a.Offset - b.Offset
	if d < 0 {
		d = -d
	}
	return d <= agreement+(a.RTT+b.RTT)/2
}
