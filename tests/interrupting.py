"""A dataset that presses Ctrl-C mid-run, for the tests that stop a training and resume it."""
import os
import signal


class InterruptAt:
    """A dataset that presses Ctrl-C (sends SIGINT to this process) when image ``at`` is first read."""

    def __init__(self, dataset, at):
        self.dataset, self.at, self.reads = dataset, at, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.dataset[i]
