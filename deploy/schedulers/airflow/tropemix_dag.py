"""Airflow DAGs that start tropemix runs on a schedule.

``tropemix_dataflow`` launches the Dataflow Flex Template (deploy/dataflow/) with the
Google provider's ``DataflowStartFlexTemplateOperator``.  ``tropemix_flink`` runs the
same pipeline module on a Flink session cluster through the Apache Beam provider's
``BeamRunPythonPipelineOperator`` and the Beam Flink job server.

Every site-specific value is an Airflow Variable, so the file itself holds no
project ids, buckets or credentials:

    tropemix_project, tropemix_region, tropemix_template (gs://.../tropemix.json),
    tropemix_config (gs://.../mix.yaml), tropemix_service_account,
    tropemix_temp_location (gs://.../tmp), tropemix_repo (checkout with pipelines/),
    tropemix_flink_master (host:8081), tropemix_job_server_jar,
    tropemix_worker_pool (host:50000)

Each scheduled run is incremental: ``run_id`` is the logical date, and the pipeline
only reads input files that earlier runs did not consume.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.sdk import DAG

DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 1,
    "retry_delay": timedelta(minutes=10),
}
RUN_ID = "{{ logical_date.strftime('%Y-%m-%dT%H-%M') }}"

with DAG(
    dag_id="tropemix_dataflow",
    description="Nightly incremental tropemix mix on Dataflow (Flex Template)",
    schedule="0 6 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,  # runs share the state file under the output root
    default_args=DEFAULT_ARGS,
    tags=["tropemix", "dataflow"],
):
    DataflowStartFlexTemplateOperator(
        task_id="build_mix",
        project_id="{{ var.value.tropemix_project }}",
        location="{{ var.value.tropemix_region }}",
        body={
            "launchParameter": {
                "jobName": "tropemix-{{ ds_nodash }}",
                "containerSpecGcsPath": "{{ var.value.tropemix_template }}",
                "parameters": {"config": "{{ var.value.tropemix_config }}", "run_id": RUN_ID},
                "environment": {
                    "serviceAccountEmail": "{{ var.value.tropemix_service_account }}",
                    "tempLocation": "{{ var.value.tropemix_temp_location }}",
                    "maxWorkers": 64,
                },
            }
        },
        wait_until_finished=True,
    )

with DAG(
    dag_id="tropemix_flink",
    description="Nightly incremental tropemix mix on a Flink session cluster",
    schedule="0 6 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["tropemix", "flink"],
):
    BeamRunPythonPipelineOperator(
        task_id="build_mix",
        runner="FlinkRunner",
        py_file="{{ var.value.tropemix_repo }}/pipelines/run.py",
        pipeline_options={
            "config": "{{ var.value.tropemix_config }}",
            "run_id": RUN_ID,
            "flink_master": "{{ var.value.tropemix_flink_master }}",
            "flink_job_server_jar": "{{ var.value.tropemix_job_server_jar }}",
            "environment_type": "EXTERNAL",
            "environment_config": "{{ var.value.tropemix_worker_pool }}",
        },
        py_interpreter="python3",
        py_system_site_packages=True,  # the worker image already has tropemix installed
    )
