-- The queue core's name for the column that a domain uses to group its jobs: jobs that
-- work on one thing share its id (a deployment's jobs share the deployment's id). The
-- core gives it no other meaning; `lc jobs ls --deployment` filters on it. The index
-- keeps its name, jobs_deployment. A concurrent run that renamed the column first makes
-- this statement fail with "column does not exist", which the runner accepts.
ALTER TABLE jobs RENAME COLUMN deployment_id TO group_id;
