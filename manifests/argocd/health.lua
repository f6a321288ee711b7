-- Argo CD health check for ml.mljob.dev/MLJob.
--
-- Argo CD sets the global `obj` (the MLJob as a table) and expects a table
-- {status = ..., message = ...} back. The operator writes status.state and five
-- metav1.Condition-shaped conditions (Ready, Opened, Closing, Closed, Failed); this
-- script maps them, and uses their messages so the Argo CD UI says why:
--
--   being deleted (finalizer closes the job, then removes its data)  Progressing
--   no status yet, or status.observedGeneration < metadata.generation Progressing
--   failed                                                           Degraded
--   opening, closing (also Closing reason TimedOut)                  Progressing
--   opened and Ready=True                                            Healthy
--   opened, Ready not True (a close was asked for, not started)      Progressing
--   closed and Ready=True (closed on purpose)                        Suspended
--   closed, Ready not True (spec.state is opened again)              Progressing
--   any other state                                                  Unknown
--
-- Argo CD runs argocd-cm scripts with gopher-lua: Lua 5.1, and only the base and table
-- libraries (no string, no math) unless useOpenLibs is set. Keep it that way.
-- Installed into argocd-cm as resource.customizations.health.ml.mljob.dev_MLJob (see
-- README.md); argocd-cm-patch.yaml is generated from this file by hack/argocd/generate.py.

local function condition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function isTrue(conditionType)
  local c = condition(conditionType)
  return c ~= nil and c.status == "True"
end

-- The message of the first of `conditionTypes` that has one, else `fallback`.
local function messageOf(conditionTypes, fallback)
  for _, conditionType in ipairs(conditionTypes) do
    local c = condition(conditionType)
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return fallback
end

local function health(status, message)
  return {status = status, message = message}
end

local metadata = obj.metadata or {}
local status = obj.status

if metadata.deletionTimestamp ~= nil then
  local message = "Deleting: the operator closes the job, then removes its results and snapshots."
  if isTrue("Closing") then
    message = message .. " " .. messageOf({"Closing"}, "")
  end
  return health("Progressing", message)
end

if status == nil or status.state == nil then
  return health("Progressing", "Waiting for the operator to report the job's state.")
end

if metadata.generation ~= nil then
  if status.observedGeneration == nil then
    return health("Progressing",
      "Waiting for the operator to observe generation " .. tostring(metadata.generation) .. ".")
  end
  if status.observedGeneration < metadata.generation then
    return health("Progressing",
      "Waiting for the operator to observe generation " .. tostring(metadata.generation) ..
      " (status is for generation " .. tostring(status.observedGeneration) .. ").")
  end
end

local state = status.state

if state == "failed" then
  -- A refused close quotes the failure and names the force-close annotation: prefer it.
  local closed = condition("Closed")
  if closed ~= nil and closed.reason == "CloseRefused" and closed.message ~= nil then
    return health("Degraded", closed.message)
  end
  return health("Degraded", messageOf({"Failed", "Ready"}, "The job failed."))
end

if state == "opening" then
  return health("Progressing", messageOf({"Opened", "Ready"}, "Opening the job."))
end

if state == "closing" then
  -- Reason TimedOut: housekeeping goes on, and the message names the force-close annotation.
  return health("Progressing", messageOf({"Closing"}, "Closing the job."))
end

if state == "opened" then
  if isTrue("Ready") then
    return health("Healthy", messageOf({"Ready", "Opened"}, "The job is open."))
  end
  return health("Progressing", messageOf({"Ready"}, "The job is open but not ready yet."))
end

if state == "closed" then
  if isTrue("Ready") then
    return health("Suspended", messageOf({"Closed"}, "The job is closed."))
  end
  return health("Progressing", messageOf({"Ready"}, "The job is closed but not ready yet."))
end

return health("Unknown", "Unknown status.state " .. tostring(state) .. ".")
