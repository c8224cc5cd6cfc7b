# Before any job is submitted to SLURM: every job's partition, memory, CPUs, nodes and GPUs against `sinfo`, and the
# plugin's status command against the cluster's accounting (mot.cluster.preflight). Remote job steps run with
# --no-hooks, so this runs once, in the submitting process.
onstart:
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        from mot.cluster import cluster_state, preflight

        sinfo, scontrol = cluster_state()
        jobs = [(job.rule.name, dict(job.resources.items()), job.threads)
                for job in workflow.dag.needrun_jobs() if not job.is_local]  # local: `all`, never submitted
        problems = preflight(jobs, sinfo, scontrol, workflow.executor_settings.status_command)
        if problems:
            raise WorkflowError("cluster preflight: " + "\ncluster preflight: ".join(problems))
        logger.info(f"cluster preflight: {len(jobs)} jobs fit the cluster's partitions")
