"""Process management: the supervisor that starts and replaces workers, the worker entry point, and
the memory budget and allocator trimming that decide when a process is replaced.
"""
