-- Orthanc auto-routing to radpair, the way a site's PACS rule does it: when a study is stable
-- (no new instance for "StableAge" seconds), send its MR series to the modality "radpair".
--
-- Only the acquired MR series are sent, never the whole study: radpair's own results (SEG, SR,
-- parametric map) arrive in this study too, and sending them back would only make radpair store
-- them again. Sending is asynchronous (a job in Orthanc), so this callback returns at once.
-- (SendToModality() from OnStableStudy fails with "Unable to read attachment": use the REST API.)

function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  local resources = {}
  for _, s in ipairs(series) do
    if s['MainDicomTags']['Modality'] == 'MR' then
      table.insert(resources, s['ID'])
    end
  end
  if #resources == 0 then
    return
  end
  print('radpair auto-routing: study ' .. studyId .. ', ' .. #resources .. ' MR series')
  RestApiPost('/modalities/radpair/store',
              DumpJson({Resources = resources, Synchronous = false}, true))
end
