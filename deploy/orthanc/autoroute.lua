-- Orthanc auto-routing to radpair, the way a site's PACS rule does it: when a study is stable
-- (no new instance for "StableAge" seconds), send its MR series and its report (SR) series to the
-- modality "radpair" (the report pairs with the images for radpair's retraining).
--
-- Each series is sent once: when routed, it is marked with the user metadata "RadpairRouted"
-- (declared in orthanc.json's "UserMetadata"), holding its number of instances then. radpair's
-- results arriving later make the study stable a second time; its series are then already marked
-- and nothing is re-sent. A series that gained instances since (a late slice) is sent again, and a
-- new series is sent on its own. radpair's own results (manufacturer "radpair") are never sent.
-- Sending is asynchronous (a job in Orthanc), so this callback returns at once.
-- (SendToModality() from OnStableStudy fails with "Unable to read attachment": use the REST API.)

local ROUTED = 'RadpairRouted'

local function wanted(series)
  local tags = series['MainDicomTags']
  return tags['Modality'] == 'MR' or (tags['Modality'] == 'SR' and tags['Manufacturer'] ~= 'radpair')
end

local function routed_count(seriesId)
  local metadata = ParseJson(RestApiGet('/series/' .. seriesId .. '/metadata?expand'))
  return tonumber(metadata[ROUTED] or '')
end

function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  local resources = {}
  for _, s in ipairs(series) do
    if wanted(s) and routed_count(s['ID']) ~= #s['Instances'] then
      table.insert(resources, s)
    end
  end
  if #resources == 0 then
    return
  end
  local ids = {}
  for _, s in ipairs(resources) do
    table.insert(ids, s['ID'])
  end
  print('radpair auto-routing: study ' .. studyId .. ', ' .. #ids .. ' series')
  RestApiPost('/modalities/radpair/store', DumpJson({Resources = ids, Synchronous = false}, true))
  for _, s in ipairs(resources) do
    RestApiPut('/series/' .. s['ID'] .. '/metadata/' .. ROUTED, tostring(#s['Instances']))
  end
end
