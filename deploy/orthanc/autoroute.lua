-- Orthanc auto-routing to radpair, the way a site's PACS rule does it: when a study is stable
-- (no new instance for "StableAge" seconds), send its MR series and its report (SR) series to the
-- modality "radpair" (the report pairs with the images for radpair's retraining).
--
-- radpair's own results (SEG, SR, parametric map, made by manufacturer "radpair") arrive in this
-- study too and are not sent back. Sending is asynchronous (a job in Orthanc), so this callback returns at once.
-- (SendToModality() from OnStableStudy fails with "Unable to read attachment": use the REST API.)

function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  local resources = {}
  for _, s in ipairs(series) do
    local tags = s['MainDicomTags']
    if tags['Modality'] == 'MR' or (tags['Modality'] == 'SR' and tags['Manufacturer'] ~= 'radpair') then
      table.insert(resources, s['ID'])
    end
  end
  if #resources == 0 then
    return
  end
  print('radpair auto-routing: study ' .. studyId .. ', ' .. #resources .. ' series')
  RestApiPost('/modalities/radpair/store',
              DumpJson({Resources = resources, Synchronous = false}, true))
end
