"""What a plan will do before a week of GPU time is spent: `simulate` replays a plan under the
duration model with the launcher's queue policy, `baselines` lay the same runs out the way other
tools would, and `compare` puts them side by side (`migbench simulate --compare`)."""
