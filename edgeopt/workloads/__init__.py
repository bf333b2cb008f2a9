"""Task packages: one subpackage per ML task (text-embedding, causal-lm, image-classification, ...).

A task package's `__init__` declares `TASK` (an `edgeopt.taskspec.TaskSpec`: its model and data source kinds,
its model family, where its workload lives) and imports nothing heavy; `edgeopt.taskspec` discovers the
packages here and those other distributions register under the `edgeopt.tasks` entry-point group.
The Workload interface every task implements is `edgeopt.workloads.base.Workload`.
"""
