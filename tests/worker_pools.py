"""A stand-in for ``laser_fairseq.data.workers.clean_worker_context`` that records the pools it makes."""

from laser_fairseq.data.workers import clean_worker_context


def recording_worker_context(pools):
    """clean_worker_context whose contexts append ``(module, processes)`` to ``pools`` for every Pool they make
    (and then make it as usual)."""

    def context_for(module):
        context = clean_worker_context(module)

        class Recording:
            def Pool(self, processes=None, *args, **kwargs):  # noqa: N802 - multiprocessing's name
                pools.append((module, processes))
                return context.Pool(processes, *args, **kwargs)

        return Recording()

    return context_for
